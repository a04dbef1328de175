//! Exec the real `strait` CNI binary the way a runtime does: CNI_* env, config on
//! stdin, result or error JSON on stdout.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::bins::bin;

/// One CNI invocation.
#[derive(Debug, Clone)]
pub struct CniCall {
    pub plugin: std::path::PathBuf,
    pub command: String,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: String,
    pub path: String,
    pub config: Value,
    /// Env vars to leave out entirely (to test "missing variable" errors).
    pub unset: Vec<String>,
    /// Bytes to send instead of `config` (to test malformed input).
    pub raw_stdin: Option<Vec<u8>>,
    /// Run the plugin inside this named namespace (`ip netns exec`), as a runtime on
    /// that "host" would.
    pub netns_exec: Option<String>,
}

/// What the plugin did.
#[derive(Debug, Clone)]
pub struct CniOutcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl CniOutcome {
    pub fn ok(&self) -> bool {
        self.code == 0
    }

    /// stdout parsed as JSON (result or error).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}", self.stdout))
    }

    /// The CNI error code on stdout (panics when the call succeeded).
    pub fn error_code(&self) -> u64 {
        assert!(
            !self.ok(),
            "expected an error, got success: {}",
            self.stdout
        );
        self.json()["code"]
            .as_u64()
            .unwrap_or_else(|| panic!("no code in error: {}", self.stdout))
    }

    /// Assert success and return the parsed result.
    pub fn expect_ok(&self) -> Value {
        assert!(
            self.ok(),
            "CNI call failed (exit {}): stdout {} stderr {}",
            self.code,
            self.stdout,
            self.stderr
        );
        if self.stdout.trim().is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }
}

impl CniCall {
    /// A call of the `strait` binary.
    pub fn new(command: &str, config: Value) -> Self {
        Self::of_plugin(&bin("strait"), command, config)
    }

    /// A call of any plugin binary (reference plugins for chains and baselines).
    pub fn of_plugin(plugin: &Path, command: &str, config: Value) -> Self {
        Self {
            plugin: plugin.to_path_buf(),
            command: command.into(),
            container_id: String::new(),
            netns: String::new(),
            ifname: "eth0".into(),
            args: String::new(),
            path: crate::bins::reference_plugins_dir()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            config,
            unset: vec![],
            raw_stdin: None,
            netns_exec: None,
        }
    }

    pub fn container(mut self, id: &str, netns: &Path) -> Self {
        self.container_id = id.into();
        self.netns = netns.display().to_string();
        self
    }

    pub fn ifname(mut self, ifname: &str) -> Self {
        self.ifname = ifname.into();
        self
    }

    pub fn cni_args(mut self, args: &str) -> Self {
        self.args = args.into();
        self
    }

    pub fn without_env(mut self, var: &str) -> Self {
        self.unset.push(var.into());
        self
    }

    pub fn in_netns(mut self, name: &str) -> Self {
        self.netns_exec = Some(name.to_string());
        self
    }

    pub fn raw_stdin(mut self, bytes: &[u8]) -> Self {
        self.raw_stdin = Some(bytes.to_vec());
        self
    }

    pub fn run(&self) -> CniOutcome {
        let mut cmd = match &self.netns_exec {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.plugin);
                c
            }
            None => Command::new(&self.plugin),
        };
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in [
            ("CNI_COMMAND", &self.command),
            ("CNI_CONTAINERID", &self.container_id),
            ("CNI_NETNS", &self.netns),
            ("CNI_IFNAME", &self.ifname),
            ("CNI_ARGS", &self.args),
            ("CNI_PATH", &self.path),
        ] {
            if !self.unset.iter().any(|u| u == k) {
                cmd.env(k, v);
            }
        }
        let t0 = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("exec {:?}: {e}", self.plugin));
        let stdin = match &self.raw_stdin {
            Some(b) => b.clone(),
            None => serde_json::to_vec(&self.config).expect("config JSON"),
        };
        if let Some(mut s) = child.stdin.take() {
            // A plugin may exit before reading stdin (e.g. on bad env): ignore EPIPE.
            let _ = s.write_all(&stdin);
        }
        let out = child.wait_with_output().expect("wait for plugin");
        CniOutcome {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            took: t0.elapsed(),
        }
    }
}
